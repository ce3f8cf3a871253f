"""Long-lived Ray actors: the ranking actor (and the Ray Data scoring it drives) and the loop
coordinator (and the loops it runs)."""
