-- Schema 1 of the lottery's PostgreSQL store (package persist/pgstore).
-- One database holds one lottery. Every server sharing the database runs
-- the same writer rules; the rows below are what makes them agree.

-- The lottery's identity, pinned on first use like lottery.json: a server
-- started with another agency count or winning number refuses to start.
-- lottery_id = receipt.LotteryID(agencies, winning_number, nonce).
CREATE TABLE lottery (
    id             boolean     PRIMARY KEY DEFAULT true CHECK (id),
    format         integer     NOT NULL,
    agencies       integer     NOT NULL CHECK (agencies >= 1),
    winning_number integer     NOT NULL CHECK (winning_number BETWEEN 0 AND 9999),
    nonce          bytea       NOT NULL,
    lottery_id     bytea       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- One row per agency: its progress, locked FOR UPDATE by each commit that
-- changes it, so two servers never both extend the same stream.
CREATE TABLE agencies (
    agency      integer     PRIMARY KEY CHECK (agency >= 1),
    held        bigint      NOT NULL DEFAULT 0 CHECK (held >= 0), -- bets stored: indexes 0..held-1
    finished    boolean     NOT NULL DEFAULT false,               -- FINISHED is on record
    total       bigint,                                           -- bets it finished with; NULL until then
    chain       bytea       NOT NULL,                             -- chain value over the held bets (32 bytes)
    chain_state bytea       NOT NULL,                             -- the chain's saved state, to resume it
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (NOT finished OR total = held)
);

-- The bets, one row each, keyed by their agency's stream index: a bet can
-- never be stored twice, and held says how many indexes are taken.
CREATE TABLE bets (
    agency     integer  NOT NULL,
    idx        bigint   NOT NULL,
    first_name text     NOT NULL,
    last_name  text     NOT NULL,
    document   text     NOT NULL,
    birthdate  date     NOT NULL,
    number     smallint NOT NULL,
    PRIMARY KEY (agency, idx)
);

-- The winners index, bets_winners, is created with the lottery row (see
-- pgstore.go, pin): it is partial, on the pinned winning number,
--   CREATE INDEX bets_winners ON bets (agency, idx) INCLUDE (document) WHERE number = <winning>
-- so each COPY maintains one B-tree entry per winning bet instead of one per
-- bet, and the draw reads exactly the winners, in order, from the index:
--   SELECT agency, document FROM bets WHERE number = <winning> ORDER BY agency, idx

-- The draw's signed statement (receipt.Statement as JSON), once: the first
-- server to insert it wins and every server publishes that one.
CREATE TABLE draw (
    id        boolean     PRIMARY KEY DEFAULT true CHECK (id),
    root      bytea       NOT NULL,
    statement text        NOT NULL,
    drawn_at  timestamptz NOT NULL DEFAULT now()
);
