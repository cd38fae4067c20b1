with people as (
    select join_year
    from {{ ref('int_people') }}
    where join_year between 2015 and 2020
)

select
    join_year,
    count(*) as number_users_joined
from people
group by join_year
