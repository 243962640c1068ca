-- Run once by the postgres image on an empty cluster: embedline's catalog gets a database of its own
-- next to Prefect's (`prefect`, made from POSTGRES_DB). embedline creates its tables on first use.
CREATE DATABASE catalog OWNER embedline;
