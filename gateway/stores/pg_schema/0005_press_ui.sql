-- Version 5: how a web smiley's press came (qr, link, email or digital), as the
-- vendor's API reports it; empty for a terminal's press. A constant default, so
-- adding it rewrites no partition.
ALTER TABLE press ADD COLUMN ui text NOT NULL DEFAULT '';
