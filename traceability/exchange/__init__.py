"""Exchange formats for other systems: GS1 EPCIS 2.0."""
