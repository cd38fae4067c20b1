-- A person is identified by (user_name, age, date_joined): user rows are per post, and one person
-- posts many times. Posts whose user row lacks any of the three cannot be attributed to a person.
-- Incremental: a build recomputes, from all of their posts, only the people whose posts changed
-- since its last build, as they are now or as they were before (int_post_person_history: a
-- corrected post can move from one person to another). A person left with no posts is written
-- with no posts and deleted after the merge.
-- depends_on: {{ ref('int_post_person_history') }}
{{ config(post_hook="delete from {{ this }} where post_count = 0") }}

with
{%- if is_incremental() %}
{%- set built = version_held('_build') %}
{%- do assert_history_holds(built) %}
changed_posts as (
    select ind, person_id
    from {{ ref('int_post_person_history') }}
    where _build > {{ built }}
),

previous_people as (
    -- each changed post's person as of this model's last build: its newest history row up to then
    select person_id
    from (
        select
            person_id,
            row_number() over (partition by ind order by _build desc) as newest_first
        from {{ ref('int_post_person_history') }}
        where _build <= {{ built }} and ind in (select ind from changed_posts)
    ) as earlier
    where newest_first = 1
),

touched_people as (
    select person_id from changed_posts where person_id is not null
    union
    select person_id from previous_people where person_id is not null
),
{%- endif %}

attributable_posts as (
    select * from {{ ref('int_posts_enriched') }}
    where
        user_name is not null
        and age is not null
        and date_joined is not null
),

posts as (
    select * from attributable_posts
    {%- if is_incremental() %}
    where person_id in (select person_id from touched_people)
    {%- endif %}
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

select
    *,
    (select max(history._build) from {{ ref('int_post_person_history') }} as history) as _build
from people
{%- if is_incremental() %}
union all
-- people whose every post moved away: merged with no posts, then deleted (the post-hook)
select
    user_name,
    age,
    age_group,
    date_joined,
    join_year,
    person_id,
    follower_count,
    0 as post_count,
    _build
from {{ this }}
where
    person_id in (select person_id from touched_people)
    and person_id not in (select person_id from people)
{%- endif %}
