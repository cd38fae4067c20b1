with people as (
    select
        age_group,
        join_year,
        follower_count
    from {{ ref('int_people') }}
    where age_group is not null and join_year between 2015 and 2020 and follower_count is not null
)

select
    age_group,
    join_year,
    cast({{ median('follower_count') }} as double) as median_follower_count
from people
group by age_group, join_year
