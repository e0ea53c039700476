"""The revisions of custate's own tables, one module each (`migrations`)."""
