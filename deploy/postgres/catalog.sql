-- vigil's catalog: a login role and a database it owns. Owning the database
-- is all the migrations need: they create the `vigil` schema and its tables,
-- triggers and functions, under an advisory lock.
CREATE ROLE vigil LOGIN PASSWORD :'catalog_password';
CREATE DATABASE vigil OWNER vigil;
