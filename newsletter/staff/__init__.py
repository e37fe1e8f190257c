"""Services behind the staff console: accounts, audit, audience figures, imports and exports."""
