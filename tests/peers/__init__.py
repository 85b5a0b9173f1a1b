"""Test-only peers: a loopback proxy that injects faults (the Stripe peer: beanbill.stripe_peer)."""
