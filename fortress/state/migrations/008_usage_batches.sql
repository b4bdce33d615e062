-- Fortress database, migration 8: usage that other gateway nodes send through Redis is stored once.
-- Each batch carries an id, "<proxy worker's stream>/<batch number>" (fortress.cluster.producer). The
-- control node stores the id in the same transaction as the batch's rows and skips a batch whose id is
-- here already: an entry delivered again after a crash between commit and acknowledgement, or added
-- twice by a node whose XADD reached Redis but whose answer did not, is recognised. A set of ids and
-- not usage_streams' last number: entries from Redis may be stored out of order (an entry taken over
-- from another consumer arrives after newer ones), and "at or below the last" would then skip an
-- entry never stored. Ids are forgotten a day after their commit (fortress.cluster.consumer).
CREATE TABLE usage_batches (
    batch     TEXT PRIMARY KEY,
    stored_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX usage_batches_stored ON usage_batches (stored_at);
