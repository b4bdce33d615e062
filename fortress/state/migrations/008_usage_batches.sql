-- Fortress database, migration 8: usage that other gateway nodes send through Redis is stored once.
-- Each batch carries an id its node chose ("<node>/<pid>.<start ms>/<seq>"); the control node stores
-- the id in the same transaction as the batch's rows and skips a batch whose id is already here: an
-- entry delivered again after a crash between commit and acknowledgement, or sent twice by a node whose
-- first XADD reached Redis but whose answer did not, is recognised. Ids are forgotten after a day.
CREATE TABLE usage_batches (
    batch     TEXT PRIMARY KEY,
    stored_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX usage_batches_stored ON usage_batches (stored_at);
