DROP TABLE memory_snapshots;
DROP TABLE patterns;
DROP EXTENSION IF EXISTS vector;
