"""File formats: MRC volumes and RELION STAR particle tables, written atomically."""
