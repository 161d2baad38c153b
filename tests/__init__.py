"""The tests, one folder per package (streams/, exporters/, dashboards/, deploy/ with
deploy/agents/, bench/), e2e/ for whole-pipeline runs against the local stack, and support/ for
what they share. At this level: checks of the repository as a whole (the package, the
layering of the code, the handbook).
"""
