-- The role vigil backs up as (PostgreSQL 14 and newer). pg_read_all_data
-- reads every table, view and sequence in every database and schema,
-- including ones created later, and lets `pg_dumpall --globals-only`
-- (databases = "all") read the roles and tablespaces. It can change nothing.
CREATE ROLE vigil_backup LOGIN PASSWORD :'backup_password';
GRANT pg_read_all_data TO vigil_backup;
-- CONNECT is PUBLIC's by default; where it was revoked, grant it for every
-- database backed up (databases = "all" includes the catalog's):
GRANT CONNECT ON DATABASE shop, vigil TO vigil_backup;
