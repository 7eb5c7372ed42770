"""Change data capture: Postgres ``orders`` / ``products`` -> Debezium envelopes on
``orders_db.public.orders`` / ``orders_db.public.products``.

``debezium`` + ``debezium_connect``: real Debezium (Kafka Connect standalone worker in a
supervised child process), the default when a Java runtime is present; ``builtin`` +
``pgoutput``: the built-in reader without a JVM, whose envelopes equal Debezium's.
"""
