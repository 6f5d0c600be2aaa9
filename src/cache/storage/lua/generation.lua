-- The purge generation now (initialised when missing).
local gen = purge_state()
return gen
