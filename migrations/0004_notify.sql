-- Commit notices: every change of a space's head_seq sends
-- NOTIFY arbor_head, '<space name> <head_seq>' (delivered at commit, in
-- commit order) so every server process relays ops committed by the others.
-- Contract: migrations/README.md.

CREATE FUNCTION arbor_notify_head() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('arbor_head', NEW.name || ' ' || NEW.head_seq);
    RETURN NULL;
END $$;

CREATE TRIGGER spaces_notify_head
    AFTER UPDATE OF head_seq ON spaces
    FOR EACH ROW WHEN (NEW.head_seq > OLD.head_seq)
    EXECUTE FUNCTION arbor_notify_head();
