with people as (
    select
        age_group,
        follower_count
    from {{ ref('int_people') }}
    where age_group is not null and follower_count is not null
)

select
    age_group,
    cast({{ median('follower_count') }} as double) as median_follower_count
from people
group by age_group
