"""The Slack front end: the Bolt app in socket mode, its listeners, Block Kit renderer and feed follower."""
