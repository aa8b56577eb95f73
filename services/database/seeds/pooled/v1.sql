-- landlord seed: pooled v1 (pooled tier; rows in landlord_pooled's shared tables)
-- verify-tables:
-- verify-rows: settings=3
INSERT INTO settings (name, value) VALUES
    ('locale', 'en'),
    ('timezone', 'UTC'),
    ('mfa_required', 'false');
