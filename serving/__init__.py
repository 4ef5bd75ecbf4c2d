"""Ray Serve HTTP endpoint for trained policies."""
