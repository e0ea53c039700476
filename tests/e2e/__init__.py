"""End-to-end tests: the installed console script and the README, as a user runs them."""
