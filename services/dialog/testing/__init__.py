"""Fakes for what cannot run here, written from the protocol documentation: a CGRateS
billing engine (`fake_cgrates`). Test and demo use only."""
