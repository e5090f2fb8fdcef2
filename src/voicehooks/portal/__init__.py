"""The customer portal (SPEC §6): session links, pages, templates, static files."""
