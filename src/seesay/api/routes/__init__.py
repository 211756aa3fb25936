"""Thin routers: parse, call the service, format. No business logic lives here."""
