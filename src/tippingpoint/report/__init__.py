"""Reports: read result streams, merge them, and format them. Formatters only format."""
