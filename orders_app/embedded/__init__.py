"""The embedded stack of ``orders-app run``: a real broker (Tansu) and PostgreSQL as child
processes (``servers``), the supervisor that restarts workers and Debezium
(``supervisor``), and the load generator (``generator``)."""
