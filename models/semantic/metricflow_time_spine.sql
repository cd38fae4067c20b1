-- One row per day: the time spine MetricFlow joins to when a metric is asked for by time (by
-- `metric_time`, or over periods with no posts). Covers the posts' and joins' years with room to grow.
with days as (
    {{ day_spine('2015-01-01', '2031-01-01') }}
)

select cast(date_day as date) as date_day
from days
