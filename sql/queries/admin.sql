-- Databases on the embedded server. Names are constants here, never values from outside.

-- name: database_exists
SELECT 1 FROM pg_database WHERE datname = $1

-- name: create_app_database
CREATE DATABASE scrum4me

-- name: drop_demo_database
DROP DATABASE IF EXISTS reactor_demo WITH (FORCE)

-- name: create_demo_database
CREATE DATABASE reactor_demo
