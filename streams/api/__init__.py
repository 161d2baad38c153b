"""The worker's HTTP API: the fleet and machine endpoints, the maintenance endpoints, bearer
authentication and TLS. Handlers read a :class:`~arcbeat.streams.api.fleet_view.FleetView`,
never the heartbeat loop itself."""
