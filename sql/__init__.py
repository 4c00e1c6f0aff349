"""SQL assets of stcstore: views/*.sql are created on every connection, queries/*.sql are named queries."""
