with pins as (
    {{ latest_per_key(ref('stream_pinterest__pins'), 'ind') }}
),

geo as (
    {{ latest_per_key(ref('stream_pinterest__geo'), 'ind') }}
),

as_of as (
    select {{ metrics_as_of() }} as as_of
),

recent_posts as (
    select
        geo.country,
        pins.category
    from pins
    inner join geo
        on pins.ind = geo.ind
    cross join as_of
    where
        pins._arrival_time > {{ dbt.dateadd('minute', -var('trending_window_minutes'), 'as_of.as_of') }}
        and pins._arrival_time <= as_of.as_of
        and geo.country is not null
        and pins.category is not null
),

counted as (
    select
        country,
        category,
        count(*) as posts_in_window
    from recent_posts
    group by country, category
)

select
    country,
    category,
    posts_in_window,
    rank() over (partition by country order by posts_in_window desc) as category_rank
from counted
