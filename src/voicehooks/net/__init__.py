"""Network rules shared by the domains: which addresses deliveries may reach."""
