-- The nine questions in plain DuckDB SQL, written by hand, no dbt: the speed reference for
-- bench/bench_scale.py. Same cleaning rules (RAW_DATA.md) and the same latest-copy-wins rule as the
-- dbt project, but only the columns the questions need, no tests, no data-quality counts.
-- {lake} is replaced by the bench with the lake's path.

create or replace view bronze_pin as select * from delta_scan('{lake}/bronze/pin');
create or replace view bronze_geo as select * from delta_scan('{lake}/bronze/geo');
create or replace view bronze_user as select * from delta_scan('{lake}/bronze/user');

create or replace table pins as
with typed as (
    select
        try_cast("index" as bigint) as ind,
        category,
        case when rtrim(poster_name, ' ') = 'User Info Error' then null else rtrim(poster_name, ' ') end as poster_name,
        case when rtrim(follower_count, ' ') = 'User Info Error' then null else follower_count end as follower_text,
        _ingested_at, _stream, _offset
    from bronze_pin
)
select
    ind, category, poster_name,
    case
        when regexp_full_match(follower_text, '[0-9]+') then try_cast(follower_text as bigint)
        when regexp_full_match(follower_text, '[0-9]+k') then try_cast(follower_text[:-2] || '000' as bigint)
        when regexp_full_match(follower_text, '[0-9]+M') then try_cast(follower_text[:-2] || '000000' as bigint)
    end as follower_count
from typed
qualify row_number() over (partition by ind order by _ingested_at desc, _stream desc, _offset desc) = 1;

create or replace macro strict_timestamp(text) as case
    when regexp_full_match(text, '[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[ T]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]')
        and text[:4] != '0000'
        then try_cast(replace(text, 'T', ' ') as timestamp)
end;

create or replace table geo as
select try_cast(ind as bigint) as ind, country, strict_timestamp("timestamp") as posted_at
from bronze_geo
qualify row_number() over (partition by ind order by _ingested_at desc, _stream desc, _offset desc) = 1;

create or replace table users as
select
    try_cast(ind as bigint) as ind,
    first_name || ' ' || last_name as user_name,
    case when regexp_full_match(age, '-?[0-9]+') then try_cast(age as integer) end as age,
    strict_timestamp(date_joined) as date_joined
from bronze_user
qualify row_number() over (partition by ind order by _ingested_at desc, _stream desc, _offset desc) = 1;

create or replace table posts as
select
    pins.ind, pins.category, pins.poster_name, pins.follower_count,
    geo.country, year(geo.posted_at) as post_year,
    users.user_name, users.age, users.date_joined, year(users.date_joined) as join_year,
    case
        when users.age >= 51 then '50+'
        when users.age >= 36 then '36-50'
        when users.age >= 25 then '25-35'
        when users.age >= 18 then '18-24'
    end as age_group
from pins
inner join geo on pins.ind = geo.ind
inner join users on pins.ind = users.ind;

create or replace table people as
select user_name, age, age_group, date_joined, join_year, max(follower_count) as follower_count
from posts
where user_name is not null and age is not null and date_joined is not null
group by all;

create or replace table most_popular_category_by_country as
select country, category, category_count from (
    select country, category, count(*) as category_count from posts
    where country is not null and category is not null group by all
) qualify rank() over (partition by country order by category_count desc) = 1;

create or replace table posts_per_category_by_year as
select post_year, category, count(*) as category_count from posts
where post_year between 2018 and 2022 and category is not null group by all;

create or replace table most_followed_user_by_country as
select country, poster_name, follower_count from (
    select country, poster_name, max(follower_count) as follower_count from posts
    where country is not null and poster_name is not null and follower_count is not null group by all
) qualify rank() over (partition by country order by follower_count desc) = 1;

create or replace table country_with_most_followed_user as
select * from most_followed_user_by_country qualify rank() over (order by follower_count desc) = 1;

create or replace table most_popular_category_by_age_group as
select age_group, category, category_count from (
    select age_group, category, count(*) as category_count from posts
    where age_group is not null and category is not null group by all
) qualify rank() over (partition by age_group order by category_count desc) = 1;

create or replace table median_follower_count_by_age_group as
select age_group, cast(median(follower_count) as double) as median_follower_count from people
where age_group is not null and follower_count is not null group by all;

create or replace table users_joined_by_year as
select join_year, count(*) as number_users_joined from people where join_year between 2015 and 2020 group by all;

create or replace table median_follower_count_by_join_year as
select join_year, cast(median(follower_count) as double) as median_follower_count from people
where join_year between 2015 and 2020 and follower_count is not null group by all;

create or replace table median_follower_count_by_age_group_and_join_year as
select age_group, join_year, cast(median(follower_count) as double) as median_follower_count from people
where age_group is not null and join_year between 2015 and 2020 and follower_count is not null group by all;
