"""Real local services for the demo and the tests: Postgres 15 and Mosquitto 2 from Debian packages.

Each service keeps its data under a project-local folder and listens on a non-default loopback
port; the system services installed by the packages are never touched.
"""
