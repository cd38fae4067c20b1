with pins as (
    {{ latest_per_key(ref('stream_pinterest__pins'), 'ind') }}
),

as_of as (
    select {{ metrics_as_of() }} as as_of
),

posts as (
    select
        pins.poster_name,
        pins.follower_count,
        pins._arrival_time,
        pins._ingested_at,
        pins._stream,
        pins._offset,
        case
            when
                pins._arrival_time > {{ dbt.dateadd('minute', -var('popularity_window_minutes'), 'as_of.as_of') }}
                and pins._arrival_time <= as_of.as_of
                then 1
            else 0
        end as in_window
    from pins
    cross join as_of
    where pins.poster_name is not null
),

per_poster as (
    select
        poster_name,
        cast(sum(in_window) as bigint) as posts_in_window,
        count(*) as posts_all_time,
        max(_arrival_time) as last_post_at
    from posts
    group by poster_name
),

latest_followers as (
    {{ latest_per_key('posts', 'poster_name') }}
)

select
    per_poster.poster_name,
    per_poster.posts_in_window,
    per_poster.posts_all_time,
    latest_followers.follower_count,
    per_poster.last_post_at
from per_poster
inner join latest_followers
    on per_poster.poster_name = latest_followers.poster_name
