"""Helpers the tests share: a served queue, real worker processes, the Slack emulator, PostgreSQL."""
