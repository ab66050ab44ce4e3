"""The Serve deployments of the graph; each module holds a plain engine class and a thin deployment."""
