"""One module per family of effects; the table that maps each type to them is in
`custate.domain.fold`. Every effect has the signature `(state, activity) -> None`, touches
nothing but the working state it is given, and declares where it is defined which parts of
that state it writes (`effect.writes`)."""
