"""The console's pages: server-rendered Jinja templates over the same operator calls as the API."""
