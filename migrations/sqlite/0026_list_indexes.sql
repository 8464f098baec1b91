-- Indexes the console's lists read in order, so a page reads its rows instead of sorting the
-- fleet (measured by `mprelay bench site`): the site's device list is ordered by hostname then
-- device id, and a baseline's lists and its failing devices pick the current rows of one
-- baseline, often in one state. Neither column changes with an ordinary report (hostname only
-- with an enrollment, state only with a transition), so the writer rarely touches them.
CREATE INDEX devices_hostname ON devices (hostname, device_id);
CREATE INDEX current_compliance_baseline ON current_compliance (baseline_id, state);
