"""PNG figures where a person would rather look than read."""
