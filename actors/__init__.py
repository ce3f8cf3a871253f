"""Long-lived Ray actors: the ranking actor (and the Ray Data scoring it drives)."""
