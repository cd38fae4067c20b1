with people as (
    select
        join_year,
        follower_count
    from {{ ref('int_people') }}
    where join_year between 2015 and 2020 and follower_count is not null
)

select
    join_year,
    cast({{ median('follower_count') }} as double) as median_follower_count
from people
group by join_year
