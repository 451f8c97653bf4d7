"""da's test suite; a package so that a test folder named after a stdlib module cannot shadow it."""
