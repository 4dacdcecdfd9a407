-- The role vigil backs up as, on PostgreSQL 13 and older (no
-- pg_read_all_data): grants per database and per schema, here for the
-- schema `public` of the database `shop`. Repeat the part after \connect for
-- every schema of every database backed up. `databases = "all"` is not
-- possible on these versions without a superuser: pg_dumpall
-- --globals-only reads pg_authid.
CREATE ROLE vigil_backup LOGIN PASSWORD :'backup_password';
GRANT CONNECT ON DATABASE shop TO vigil_backup;
\connect shop
GRANT USAGE ON SCHEMA public TO vigil_backup;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO vigil_backup;
GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO vigil_backup;
-- Tables and sequences created later, by the role running this (add
-- FOR ROLE app_owner when another role creates them):
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO vigil_backup;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON SEQUENCES TO vigil_backup;
