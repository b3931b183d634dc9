"""Refusing bad input early: validators, the whole-config check, the head/loss pairing."""
