"""The research agent: plan queries, search them in parallel, summarize what was found."""
