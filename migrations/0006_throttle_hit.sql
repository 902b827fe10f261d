-- One throttle count as a function, so that a protocol step can count a request in the same
-- statement as its other work (one round trip instead of two). Fixed windows: the first hit
-- after a window ended starts a new one. PL/pgSQL rather than SQL: its statement plan is cached
-- for the session, where an SQL function's body is planned again at every call.
CREATE FUNCTION throttle_hit(p_bucket TEXT, p_now TIMESTAMPTZ, p_window_secs BIGINT)
RETURNS TABLE (count INTEGER, window_start TIMESTAMPTZ)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN QUERY
    INSERT INTO throttle AS t (bucket, window_start, count) VALUES (p_bucket, p_now, 1)
    ON CONFLICT (bucket) DO UPDATE SET
        count = CASE WHEN t.window_start <= p_now - make_interval(secs => p_window_secs)
                     THEN 1 ELSE t.count + 1 END,
        window_start = CASE WHEN t.window_start <= p_now - make_interval(secs => p_window_secs)
                            THEN p_now ELSE t.window_start END
    RETURNING t.count, t.window_start;
END
$$;
