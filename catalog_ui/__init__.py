"""Server-rendered web catalog and operator pages. Arrives with the web UI issue."""
