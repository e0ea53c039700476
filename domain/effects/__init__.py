"""One module per family of effects; the table that maps each type to them is in
`custate.domain.fold`. Every effect has the signature `(state, activity) -> None` and
touches nothing but the working state it is given."""
