-- Jobs that span every tenant (a full reindex) have no tenant: NULL, as
-- the jobs table always said, not the empty string earlier versions wrote.
UPDATE jobs SET tenant = NULL WHERE tenant = '';
