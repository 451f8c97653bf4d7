"""The terminal front end: the `da` client, its text renderer, REPL and local verbs."""
