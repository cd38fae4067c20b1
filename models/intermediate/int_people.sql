-- A person is identified by (user_name, age, date_joined): user rows are per post, and one person
-- posts many times. Posts whose user row lacks any of the three cannot be attributed to a person.
with posts as (
    select * from {{ ref('int_posts_enriched') }}
    where
        user_name is not null
        and age is not null
        and date_joined is not null
),

people as (
    select
        user_name,
        age,
        age_group,
        date_joined,
        join_year,
        person_id,
        -- a person's follower count is the largest seen on their posts
        max(follower_count) as follower_count,
        count(*) as post_count
    from posts
    group by person_id, user_name, age, age_group, date_joined, join_year
)

select * from people
